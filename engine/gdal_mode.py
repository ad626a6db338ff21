"""GDAL's exception mode, switched on only while ModalSeg's own code runs.

ModalSeg's GDAL calls are written for exceptions (a failed call raises ``RuntimeError`` instead of
returning ``None``). The mode is a flag of the host process, one each for ``gdal``, ``ogr`` and
``osr``, and with GDAL 3.6 (no ``gdal.ExceptionMgr``) it is process-wide, not per thread: setting
it at import would change it for QGIS and every other plugin. So :func:`gdal_exceptions` turns it
on around ModalSeg's entry points and puts back what was there when the last of them returns.

Being process-wide is also what keeps the engine's reader and writer threads covered: they run
inside ``run_segmentation``, whose scope holds the mode on until they have finished. Scopes are
counted, so overlapping runs (two Processing algorithms at once, one thread each) never restore
the host's mode under a run that is still going.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, List

_lock = threading.Lock()
_open_scopes = 0
_switched_on: List[Any] = []  # the modules the first open scope turned on (the host had them off)


def _switch(modules: List[Any], on: bool) -> None:
    """``UseExceptions`` also pushes an error handler on the *calling thread's* handler stack, and
    ``DontUseExceptions`` pops it, in reverse order of the pushes. The last scope to close may run
    in another thread than the first to open, so both switches run in a short-lived thread of
    their own: no thread of QGIS keeps a handler pushed, and pops always match pushes."""
    def run() -> None:
        for module in (modules if on else reversed(modules)):
            if on:
                module.UseExceptions()
            else:
                module.DontUseExceptions()

    switcher = threading.Thread(target=run, name="modalseg-gdal-mode")
    switcher.start()
    switcher.join()


@contextmanager
def gdal_exceptions() -> Iterator[None]:
    """GDAL, OGR and OSR raise on failure inside this scope; outside it the host's mode is untouched.

    Also a decorator: ``@gdal_exceptions()``."""
    global _open_scopes
    from osgeo import gdal, ogr, osr  # here, not at import: the plugin's Processing side imports this module

    with _lock:
        if _open_scopes == 0:
            _switched_on[:] = [module for module in (gdal, ogr, osr) if not module.GetUseExceptions()]
            _switch(_switched_on, True)
        _open_scopes += 1
    try:
        yield
    finally:
        with _lock:
            _open_scopes -= 1
            if _open_scopes == 0:
                _switch(_switched_on, False)
                _switched_on.clear()
