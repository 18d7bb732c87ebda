"""Video I/O: decoding with limits (``decode``), uniform frame sampling (``sampling``), mp4 writing (``encode``)."""
