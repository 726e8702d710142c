"""Testing helpers for users of bbox-lfm: the pytest plugin that records and replays queries
(``bbox_client``, ``@pytest.mark.bbox_cassette``; see docs/cassettes.md)."""
