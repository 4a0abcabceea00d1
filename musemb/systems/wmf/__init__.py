"""WMF: weighted matrix factorisation of listening data (Hu, Koren & Volinsky 2008), the latent
factors of Platt's thesis (`004_*` paper, chapter 5), as a registered system.

It is not trained by the gradient loop: its verb is `fit(config, workdir)` (alternating least
squares, `als.py`, resumable per iteration: `fit.py`), run by `launch.train` or `launch.wmf`
with `configs/wmf.py`. Systems that use the factors (SampleCNN's regression, Won et al.'s cultural
branch) read the run's `factors.npz` by track id; `report` and `compare` lay runs out as the
thesis' Tables 5.1-5.5 (`report.py`). The package: `als.py` the solver, `data.py` the proxy task's
tags, `fit.py` plays -> held-out split -> fit -> recommendation and proxy metrics.
"""

from musemb.systems import System
from musemb.systems.wmf import fit
from musemb.systems.wmf import report

SYSTEM = System(name="wmf", fit=fit.fit_and_save, report=report.write_report,
                compare=report.compare_runs)
