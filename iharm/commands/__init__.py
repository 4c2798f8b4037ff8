"""The command-line programs, installed by ``pip install .`` as entry points (pyproject ``[project.scripts]``).

| installed command  | module                          | the official command line it also serves    |
|--------------------|---------------------------------|---------------------------------------------|
| ``iharm-harmonize``| :mod:`iharm.commands.harmonize` | ``python scripts/predict_for_dir.py``       |
| ``iharm-evaluate`` | :mod:`iharm.commands.evaluate`  | ``python scripts/evaluate_model.py``        |
| ``iharm-train``    | :mod:`iharm.commands.train`     | ``python train.py``                         |
| ``iharm-score``    | :mod:`iharm.commands.score`     | ``python scripts/predict_harmony_score.py`` |
| ``iharm-serve``    | :mod:`iharm.commands.serve`     | ``python scripts/serve.py``                 |

Each ``main(argv)`` returns the exit status; the scripts are three-line callers of it.
"""
