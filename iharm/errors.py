"""The base of every error iharm raises for a user's input: catch :class:`IharmError` for all of them.

Each subclass lives with the concept it guards and also derives from the
built-in type callers used to catch (``ValueError``, ``RuntimeError``):

* :class:`iharm.data.errors.DataError`: a dataset or image file (names the file and line);
* :class:`iharm.utils.config.ConfigError`: config.yml or a path it names;
* :class:`iharm.model.checkpoints.CheckpointError`: a weights file;
* :class:`iharm.utils.files.OutputPathError`: an output that would replace an input or cannot be written;
* :class:`iharm.engine.experiment.ExperimentError`: an experiment folder.
"""
from __future__ import annotations


class IharmError(Exception):
    """A problem with what the user gave (a file, a path, an option): the message names it."""
