"""Export a trained model to ONNX, checked with onnxruntime against PyTorch before it is written.

::

    python scripts/export_onnx.py DucoNet checkpoints/hsynth/DucoNet_hsynth.pth --size 256 --out duconet.onnx

The graph has dynamic batch, height and width (multiples of 32; of 256 for
BargainNet, which also writes ``<out stem>_E.onnx``, its domain code
extractor). What its inputs and outputs are is in ``iharm/inference/onnx_export.py``
and the README ("Export"); the file's metadata holds it too. Before writing,
every graph runs in onnxruntime and in PyTorch on a batch of 2 at the traced
size and one image of another shape; the export fails, writing nothing, if
they differ by more than ``--tolerance``. An existing file is never replaced.
Exit status 2 for a bad argument, checkpoint or output path, 1 for a failed check.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iharm.inference.onnx_export import OPSET, ExportCheckError, check_trace_size, export_onnx
from iharm.inference.utils import load_model
from iharm.model.checkpoints import CheckpointError
from iharm.model.registry import MODELS
from iharm.utils.files import check_output_file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_type", choices=list(MODELS), help="registered model name")
    parser.add_argument("checkpoint", type=Path, help="weights: ours or the official .pth")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write (never replaced)")
    parser.add_argument("--size", type=int, default=256,
                        help="side of the square the graph is traced at (default 256; other sizes still run)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest onnxruntime-PyTorch difference accepted (default 1e-4)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    args = parser.parse_args(argv)
    try:
        check_trace_size(args.model_type, args.size)
    except ValueError as exc:
        parser.error(str(exc))
    if args.out.suffix != ".onnx":
        parser.error(f"--out {args.out}: name a .onnx file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_output_file(args.out, "--out", [args.checkpoint])
        model = load_model(args.model_type, args.checkpoint)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        results = export_onnx(args.model_type, model, args.out, args.size, tolerance=args.tolerance,
                              opset=args.opset)
    except FileExistsError as exc:
        print(f"error: --out {exc}", file=sys.stderr)
        return 2
    except ExportCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for result in results:
        checks = ", ".join(f"{shape}: {difference:.2e}" for shape, difference in result.differences.items())
        print(f"wrote {result.path} (max |onnxruntime - PyTorch| {checks})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
