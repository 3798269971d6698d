"""`python -m sim [overrides]`: simulate the configured cluster(s) on the configured workload.

With no overrides: Llama-3.1-8B on H100s, the bundled Azure LLM inference 2023 conv trace,
the same GPU budget run monolithic and disaggregated, a side-by-side table on the terminal
and tables, summary and plots in Hydra's run directory.
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sim.config import ConfigError
from sim.experiment import print_report, run_experiment
from sim.workload import WorkloadError


@hydra.main(version_base=None, config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        experiment = run_experiment(cfg, out_dir, plot=cfg.output.plots)
    except (ConfigError, WorkloadError) as error:
        raise SystemExit(f"error: {error}") from None
    print_report(cfg, experiment, out_dir)


if __name__ == "__main__":
    main()
