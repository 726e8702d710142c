"""Provider profiles: one TOML file per provider (base URL, key variable, capabilities,
limits, prices).

The shipped profiles live in the top-level ``providers/`` folder (installed as the package
``bbox_lfm.providers``). A user adds their own by putting ``NAME.toml`` files in a folder named
by ``$BBOX_LFM_PROVIDERS_DIR`` (searched first) or by passing a path to :func:`load_profile`.

``bbox-lfm providers probe --base-url URL`` asks a running server what it does and writes a
*probed* profile under the cache directory (:func:`probed_profile_path`); the client prefers it
for that URL (:func:`probed_profile`) over the named profile, whose values are what each
server's documentation says.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ConfigError
from .types import Capabilities

__all__ = ["Price", "ProviderProfile", "available_profiles", "load_profile", "probed_profile",
           "probed_profile_path"]


@dataclass(frozen=True, kw_only=True)
class Price:
    """US dollars per million prompt and completion tokens."""

    prompt: float = 0.0
    completion: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollars for the given token counts."""
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1e6


@dataclass(frozen=True, kw_only=True)
class ProviderProfile:
    """What bbox-lfm knows about a provider before sending anything."""

    name: str
    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    api_key_required: bool = False
    default_model: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)
    requests_per_minute: float = 0.0
    tokens_per_minute: float = 0.0
    prices: Mapping[str, Price] = field(default_factory=lambda: MappingProxyType({}))
    source: str = ""  # where the values come from: a shipped file, or "probed <url> at <time>"

    @property
    def probed(self) -> bool:
        """True for a profile written by ``bbox-lfm providers probe``."""
        return self.source.startswith("probed")

    def price(self, model: str | None) -> Price:
        """The price of ``model``, else the profile's default price, else free."""
        if model and model in self.prices:
            return self.prices[model]
        return self.prices.get("default", Price())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<mapping>") -> ProviderProfile:
        """Build a profile from the parsed TOML table."""
        for key in ("name", "base_url"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ConfigError(f"{source}: {key} must be a non-empty string; got {data.get(key)!r}")
        limits = data.get("limits", {})
        prices = {m: Price(**p) for m, p in data.get("prices", {}).items()}
        return cls(
            name=data["name"], base_url=data["base_url"], api_key_env=data.get("api_key_env", "OPENAI_API_KEY"),
            api_key_required=bool(data.get("api_key_required", False)), default_model=data.get("default_model", ""),
            capabilities=Capabilities.from_mapping(data.get("capabilities", {})),
            requests_per_minute=float(limits.get("requests_per_minute", 0) or 0),
            tokens_per_minute=float(limits.get("tokens_per_minute", 0) or 0),
            prices=MappingProxyType(prices), source=str(data.get("source") or source),
        )


def _search_dirs() -> list[Path]:
    dirs = []
    user = os.environ.get("BBOX_LFM_PROVIDERS_DIR")
    if user:
        dirs.append(Path(user))
    # a source checkout (this package's folder beside providers/) reads its own profiles, not
    # those of another checkout that an editable install maps ``bbox_lfm.providers`` to
    checkout = Path(__file__).resolve().parent.parent / "providers"
    if (checkout / "bbox-lfm.toml").is_file():
        dirs.append(checkout)
        return dirs
    try:
        dirs.append(Path(str(resources.files("bbox_lfm.providers"))))
    except ModuleNotFoundError:
        dirs.append(checkout)
    return dirs


def available_profiles() -> list[str]:
    """Names of every profile that :func:`load_profile` can find."""
    names: set[str] = set()
    for d in _search_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def load_profile(name_or_path: str | os.PathLike[str]) -> ProviderProfile:
    """Load a profile by name (user folder first, then the shipped ones) or from a TOML path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        for d in _search_dirs():
            if (d / f"{name_or_path}.toml").is_file():
                path = d / f"{name_or_path}.toml"
                break
        else:
            raise ConfigError(
                f"provider must be one of {available_profiles()} or a path to a .toml profile; got {str(name_or_path)!r}"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"provider profile {str(path)!r} could not be read: {exc}") from exc
    return ProviderProfile.from_mapping(data, source=str(path))


def _profiles_cache_dir() -> Path:
    from .stores.sqlite import default_cache_path

    return default_cache_path().parent / "profiles"


def probed_profile_path(base_url: str) -> Path:
    """Where ``bbox-lfm providers probe`` keeps the profile it wrote for ``base_url``: under the
    cache directory, one file per URL (its host and port in the name, for people to read)."""
    url = base_url.rstrip("/")
    slug = "".join(c if c.isalnum() else "-" for c in url.split("://", 1)[-1]).strip("-")[:60]
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    return _profiles_cache_dir() / f"{slug}-{digest}.toml"


def probed_profile(base_url: str | None) -> ProviderProfile | None:
    """The probed profile cached for ``base_url``, or None (also when it cannot be read:
    a stale or broken file must never stop a run that names its provider)."""
    if not base_url or os.environ.get("BBOX_LFM_PROBED_PROFILES", "on").lower() in ("0", "off", "no", "false"):
        return None
    path = probed_profile_path(base_url)
    if not path.is_file():
        return None
    try:
        return load_profile(path)
    except ConfigError:
        return None
