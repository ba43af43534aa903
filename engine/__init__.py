"""The middle floor: builds datasets, models and pretext tasks from a config, trains and
evaluates them. Entry points call into here; leaf packages never import it."""
