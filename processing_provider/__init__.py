"""QGIS side of ModalSeg: the Processing provider, one module per algorithm, output styling.

Everything here turns QGIS layers and parameters into engine calls and engine results into
styled layers; no inference or raster maths lives here.
"""
