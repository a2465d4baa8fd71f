"""Studies: one command trains every member of a comparison and writes the paper's table
and figures. plan.py checks a study, members.py and tuning.py train its runs, evals.py holds
the evaluators that run after them (study.evals), tables.py and figures.py write the
results, run.py ties them together (`run_study`).

May import: everything in flax_cae but the commands.
"""

from flax_cae.studies.plan import is_study
from flax_cae.studies.run import run_study

__all__ = ['is_study', 'run_study']
