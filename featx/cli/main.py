"""The click group behind the ``featx`` command."""
from __future__ import annotations

import click

from featx.cli.backbones import backbones_cmd, layers_cmd
from featx.cli.check import check_cmd
from featx.cli.common import FeatxGroup, setup_logging
from featx.cli.compact import compact_cmd
from featx.cli.compare import compare_cmd
from featx.cli.demo import demo_cmd
from featx.cli.explain import explain_cmd
from featx.cli.extract import extract_cmd
from featx.cli.fit import fit_cmd
from featx.cli.info import info_cmd
from featx.cli.predict import predict_cmd
from featx.cli.robustness import robustness_cmd

MAIN_EPILOG = """\b
Examples:
  featx extract images/ -o cache.h5 && featx fit cache.h5 --features efficientnet_lite0 -o model.joblib
  featx demo
"""


@click.group(cls=FeatxGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=MAIN_EPILOG)
@click.option("-v", "--verbose", is_flag=True, help="More messages (debug level: e.g. every file with duplicate content).")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.version_option(package_name="featx")
def main(verbose, debug):
    """featx: frozen pretrained CNN and handcrafted features, cached in HDF5, with classical heads."""
    FeatxGroup.debug = debug
    setup_logging(verbose=verbose)


main.add_command(demo_cmd)
main.add_command(extract_cmd)
main.add_command(info_cmd)
main.add_command(fit_cmd)
main.add_command(predict_cmd)
main.add_command(compare_cmd)
main.add_command(check_cmd)
main.add_command(compact_cmd)
main.add_command(backbones_cmd)
main.add_command(layers_cmd)
main.add_command(explain_cmd)
main.add_command(robustness_cmd)


if __name__ == "__main__":
    main()
