"""WMF: weighted matrix factorisation of listening data (Hu, Koren & Volinsky 2008), the latent
factors of Platt's thesis (`004_*` paper, chapter 5), as a registered system.

It is not trained by the gradient loop: its verb is `fit(config, workdir)` (alternating least
squares, `als.py`, resumable per iteration: `fit.py`), run by `launch.train` or `launch.wmf`
with `configs/wmf.py`. Systems that use the factors (SampleCNN's regression, Won et al.'s cultural
branch, Table 6.1's upper bound) read the run's `factors.npz` by track id: a fit on all plays, as
the thesis' (§6.2.1), with every MSD track of a matched song listed. `report` and `compare` lay
runs out as the thesis' Tables 5.1-5.5 (`report.py`). The package: `als.py` the solver, `data.py`
the proxy task's tags, `fit.py` plays -> all-plays fit -> proxy metrics, and (`eval.heldout_fit`)
held-out split -> second fit -> recommendation metrics.
"""

from musemb.systems import System
from musemb.systems.wmf import fit
from musemb.systems.wmf import report

SYSTEM = System(name="wmf", fit=fit.fit_and_save, report=report.write_report,
                compare=report.compare_runs, cpu_devices=lambda config: config.wmf.cpu_devices)
