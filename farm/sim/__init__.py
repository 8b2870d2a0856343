"""The phone simulator: simulated Android phones that the real adb server connects to over TCP.

`adbd.py` speaks the adbd side of the adb transport protocol; `phone.py` and its helpers are the
phone itself (properties, filesystem, shell, benchmark_model emulation, thermal model);
`control.py` starts a fleet of phones, an adb server and the `farm sim up` daemon; `cli.py` is the
`farm sim` click group. Every simulated phone sets `ro.farm.simulated=1`.
"""
