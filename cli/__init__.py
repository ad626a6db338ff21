"""The command line (``python -m modalseg``): the engine's algorithms without QGIS.

``segment`` takes the inputs and options of the Processing algorithm (choices from
``engine.vocabulary``, checks and messages from the engine itself) and can run its blocks on a
Dask cluster (``--dask``); ``models`` lists the bundled packages; ``evaluate`` scores a class map.
Never imports qgis: it runs on machines (cluster nodes, CI) that have only GDAL and the runtimes.
"""
