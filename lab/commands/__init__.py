"""The commands of `lab`, one module per family, thin: they turn parsed arguments into calls
of the modules below and print. `lab.cli` builds the parser and maps errors to exit codes.

- run.py       lab run, lab profile
- show.py      lab list, lab show, lab report
- verdicts.py  lab check, lab gate, lab history
"""
