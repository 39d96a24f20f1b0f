"""Data formats, one file per format: RoboTwin 1.0 pickles (robotwin.py), RoboTwin 2.0 hdf5 (robotwin2.py),
InstructPix2Pix folder datasets (ip2p.py), 3x3 grid samples (grid_samples.py), episode-level splits (splits.py),
the task instruction templates (instructions.py) and the episodes -> dataset conversion (convert.py, what `frameplan
convert` runs). Import the submodule you need; nothing heavy is imported here."""
