"""PyQt6 + pyqtgraph views; they only render what realtime publishes."""
