"""The ``frameplan`` command: the application on top of the libraries. ``main.py`` holds the verb table,
``verbs/`` one module per verb, ``bench/`` the benchmarks behind ``frameplan bench``. This package may import
everything (frameplan_core, frameplan_training, frameplan_ros); nothing imports it (tests/test_import_directions.py).
"""
