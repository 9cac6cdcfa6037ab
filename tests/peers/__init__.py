"""Real SIP peers the tests talk to over loopback (baresip; sipp lives in tests/conftest.py)."""
