"""QGIS-free model library: networks, packages, training, export."""
