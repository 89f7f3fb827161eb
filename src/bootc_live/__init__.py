"""bootc-live: boot machines live, from RAM, from bootc images."""
