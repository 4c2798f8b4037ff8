"""The local web page (``make serve``): harmonize a composite in the browser, on this machine only."""
