"""``python -m modalseg evaluate``: score a class map against reference labels (engine.evaluation)."""
import argparse
import shutil
import tempfile
from typing import Any

NAME = "evaluate"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        NAME, help="score a classified raster against reference labels (modalseg:evaluate)",
        description="Compares a classified raster with reference labels (a raster, or polygons with a class "
                    "field) on the classified raster's grid and prints overall accuracy, mIoU, mean F1, kappa "
                    "and per-class IoU / F1. Reference nodata and --ignore-value pixels are not scored; "
                    "--erosion leaves out pixels near class boundaries.")
    parser.add_argument("classified", help="classified raster (e.g. segment's output)")
    reference = parser.add_mutually_exclusive_group(required=True)
    reference.add_argument("--reference", metavar="RASTER", help="reference labels (raster)")
    reference.add_argument("--polygons", metavar="VECTOR", help="reference labels (polygons)")
    parser.add_argument("--reference-band", type=int, default=1, metavar="N", help="band of the reference raster")
    parser.add_argument("--class-field", metavar="FIELD", help="class field of the polygons (value or name)")
    parser.add_argument("--ignore-value", type=int, metavar="V", help="reference value not scored")
    parser.add_argument("--erosion", type=int, default=0, metavar="PX", help="boundary erosion radius (0 = off)")
    parser.add_argument("--model", metavar="FILE", help="model package whose class names to use")
    parser.add_argument("--csv", metavar="FILE", help="write the per-class table as CSV")
    parser.add_argument("--html", metavar="FILE", help="write the HTML report")
    parser.set_defaults(run=run)


def _pct(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{100.0 * x:.1f} %"


def run(args: argparse.Namespace, log=print) -> int:
    from ..engine import EngineError, evaluation, evaluation_report
    from ..engine.package import read_sidecar_metadata

    if args.polygons and not args.class_field:
        raise EngineError("--polygons needs --class-field (the field holding each polygon's class)")
    classes = (evaluation.classes_from_package(read_sidecar_metadata(args.model)) if args.model
               else evaluation.raster_classes(args.classified))
    options = dict(classes=classes, ignore_value=args.ignore_value, erosion_radius=args.erosion)
    if args.polygons:
        work = tempfile.mkdtemp(prefix="modalseg-evaluate-")
        try:
            result = evaluation.evaluate_polygons(args.classified, args.polygons, args.class_field, work, **options)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    else:
        result = evaluation.evaluate_classification(args.classified, args.reference,
                                                    reference_band=args.reference_band, **options)
    for message in result.messages:
        log(f"Warning: {message}")
    s = result.summary
    log(f"{result.pixels['scored']} pixels scored ({result.pixels['ignored']} ignored, {result.pixels['eroded']} "
        f"eroded): OA {_pct(s['oa'])}, mIoU {_pct(s['miou'])}, mF1 {_pct(s['mf1'])}, kappa "
        f"{'n/a' if s['kappa'] is None else format(s['kappa'], '.3f')}")
    for row in result.rows():
        log(f"  {row['value']:>3} {row['name']:<24} IoU {_pct(row['iou'])}  F1 {_pct(row['f1'])}  {row['support']} px")
    if args.csv:
        evaluation_report.write_csv(result, args.csv)
        log(f"csv: {args.csv}")
    if args.html:
        evaluation_report.write_html(result, args.html, details=[
            ("classified raster", args.classified), ("reference", args.reference or args.polygons),
            ("ignore value", "none" if args.ignore_value is None else str(args.ignore_value)),
            ("boundary erosion", f"{args.erosion} px")])
        log(f"report: {args.html}")
    return 0
