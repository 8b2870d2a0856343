"""farm's own bench suite (not the test suite): `python bench/run.py [--quick] [--only NAME]`."""
