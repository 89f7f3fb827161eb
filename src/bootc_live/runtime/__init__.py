"""Boot-time runtime of bootc-live: stdlib only, Python 3.9+, no host-side imports."""
