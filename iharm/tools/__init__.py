"""Tools built on the whole library: the speed benchmark and the quality report's tables and figures."""
