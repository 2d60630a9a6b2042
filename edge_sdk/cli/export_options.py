"""The options of ``edge-export export``, built from the export config's declarations.

Three blocks, in this order on ``--help``: what is exported and where to
(``--model``, ``--sample-data``, ``--output``, ``--weights``); one option per
:class:`~edge_sdk.export_config.ExportConfig` field that declares a flag
(:func:`~edge_sdk.export_config.cli_fields`: the flag, help and default are
written once, beside the field); and the alarm rule (five ``--alert-*`` flags
that make one manifest ``Decision``) with ``--json``.
"""

from __future__ import annotations

from inspect import Parameter, Signature, signature
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from edge_sdk.manifest import Decision

EXPORT_EPILOG = (
    "Examples:\n\n"
    "  edge-export export --model samples/cora/models.py:gcn --weights gcn.pt "
    "--sample-data cora.npz -o out/gcn.bundle\n\n"
    "  edge-export export --model program.pt2 --sample-data sensors.npz --form static "
    "-o out/plant.bundle --pack\n\n"
    "  edge-export export --model samples/cora/models.py:gcn --weights gcn.pt "
    "--sample-data cora.npz --prune structured:0.5 --fine-tune-epochs 50 --int8 "
    "--max-accuracy-drop 1.5 -o out/gcn-small.bundle\n\n"
    "  edge-export export --model samples/cora/models.py:gcn --weights gcn.pt "
    "--sample-data cora.npz --form static --int8 "
    "--profile intel-core-cpu --profile raspberry-pi-5 --profile jetson-orin-nano "
    "-o out/gcn-multi.bundle\n\n"
    "  edge-export export --model samples/cora/models.py:gcn --weights gcn.pt "
    "--sample-data cora.npz --form dynamic --profile raspberry-pi-5 "
    "--bucket 1024:4096 --bucket 4096:16384 -o out/gcn-pi5.bundle\n\n"
    "  edge-export export --model plant.py:detector --weights detector.pt "
    "--sample-data windows.npz --form static --output-name logits --output-name score "
    "--alert-output score --alert-threshold 2.5 --alert-consecutive 3 "
    "--alert-class-output logits -o out/detector.bundle"
)


def _export_inputs(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="module:function or file.py:function returning a torch.nn.Module, "
            "or a torch.export program (.pt2).",
        ),
    ],
    sample_data: Annotated[
        list[Path],
        typer.Option(
            "--sample-data",
            "-s",
            help=".npz with x, edge_index[, edge_attr, batch, y, mask]; repeatable. "
            "Parity is measured on all of them.",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Bundle directory to create.")],
    weights: Annotated[
        Path | None, typer.Option("--weights", "-w", help="State-dict checkpoint to load.")
    ] = None,
) -> None:
    """What is exported and where to (the options before the config's)."""


def _export_outputs(
    alert_output: Annotated[
        str | None,
        typer.Option(
            help="Alarm rule: output holding the anomaly score (one value per window); "
            "edge-node raises alerts by it. Needs --alert-threshold."
        ),
    ] = None,
    alert_threshold: Annotated[
        float | None,
        typer.Option(help="Alarm rule: a window is anomalous when its score is above this."),
    ] = None,
    alert_consecutive: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Alarm rule: windows in a row above the threshold to raise (on-delay); default 1.",
        ),
    ] = None,
    alert_clear_after: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Alarm rule: windows in a row at or below the threshold to clear (off-delay); "
            "default: as many as raise.",
        ),
    ] = None,
    alert_class_output: Annotated[
        str | None,
        typer.Option(
            help="Alarm rule: output with class logits that names the fault (class 0 = normal)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """The alarm rule (one manifest ``Decision`` from five flags) and output format."""


def _config_parameters() -> list[Parameter]:
    """One option per config field that declares a flag (see ``edge_sdk.export_config``)."""
    from edge_sdk.export_config import cli_fields

    params = []
    for f in cli_fields():
        option = typer.Option(*f.flag.decls, help=f.flag.help, min=f.flag.min)
        params.append(
            Parameter(
                f.param,
                Parameter.KEYWORD_ONLY,
                default=f.default,
                annotation=Annotated[f.type, option],
            )
        )
    return params


def export_signature() -> Signature:
    """The parameters of the ``export`` command, for typer to read."""
    return Signature(
        [
            *signature(_export_inputs, eval_str=True).parameters.values(),
            *_config_parameters(),
            *(
                p.replace(kind=Parameter.KEYWORD_ONLY)
                for p in signature(_export_outputs, eval_str=True).parameters.values()
            ),
        ]
    )


def decision_from_flags(
    output: str | None,
    threshold: float | None,
    consecutive: int | None,
    clear_after: int | None,
    class_output: str | None,
) -> Decision | None:
    """The ``--alert-*`` flags as a manifest ``Decision`` (None when none is given).

    Raises:
        typer.BadParameter: Only one of --alert-output and --alert-threshold, or
            another --alert-* flag without them (exit 2).
    """
    if output is None and threshold is None:
        if consecutive is not None or clear_after is not None or class_output is not None:
            raise typer.BadParameter(
                "--alert-consecutive, --alert-clear-after and --alert-class-output refine "
                "an alarm rule: "
                "add --alert-output NAME and --alert-threshold X"
            )
        return None
    if output is None or threshold is None:
        raise typer.BadParameter(
            "--alert-output and --alert-threshold go together: give both (or neither)"
        )
    from pydantic import ValidationError

    from edge_sdk.manifest import Decision

    try:
        return Decision(
            output=output,
            threshold=threshold,
            consecutive=consecutive or 1,
            clear_after=clear_after,
            class_output=class_output,
        )
    except ValidationError as exc:
        raise typer.BadParameter(f"alarm rule: {exc.errors()[0]['msg']}") from None
