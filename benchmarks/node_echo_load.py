"""The node's C-ECHO figure (issue 24, "figures to keep"): 200 associations × 50 C-ECHO against a real
`pneumo dicom-node`, 4 callers at a time; prints the failures (target 0).

A load figure, not a unit test: on a shared 2-core machine a starved thread on either side now and
then misses pynetdicom's 30 s DIMSE timeout, which measures the machine, not the node (measured at
load 7-15: the node before the issue-24 changes lost 17 of 10,000 echoes at 20 callers, after them 16).
Run it on a quiet machine and say the load it ran under.

    .venv/bin/python benchmarks/node_echo_load.py [--associations 200] [--echoes 50] [--callers 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' real-node launcher
from pneumo.inference import default_bundle_path  # noqa: E402
from test_dicom_node_support import SCU_AET, Node  # noqa: E402

NOWHERE = "NOBODY@127.0.0.1:9"  # results are not the point here: nothing listens there


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--associations", type=int, default=200)
    ap.add_argument("--echoes", type=int, default=50)
    ap.add_argument("--callers", type=int, default=4)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(Path(tmp) / "node", default_bundle_path(), NOWHERE, None, "--max-associations",
                    str(args.associations)).start()
        failures: list[int] = []

        def caller() -> None:
            ae = AE(ae_title=SCU_AET)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", node.port, ae_title="PNEUMO")
            if not assoc.is_established:
                failures.append(args.echoes)
                return
            failures.extend(1 for _ in range(args.echoes) if getattr(assoc.send_c_echo(), "Status", None) != 0)
            assoc.release()

        t0 = time.perf_counter()
        try:
            with ThreadPoolExecutor(max_workers=args.callers) as pool:
                for _ in range(args.associations):
                    pool.submit(caller)
        finally:
            node.stop()
        wall = time.perf_counter() - t0
    total = args.associations * args.echoes
    print(f"{args.associations} × {args.echoes} C-ECHO, {args.callers} callers at a time: {sum(failures)} failure(s) "
          f"of {total} in {wall:.1f} s (load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after, "
          f"{os.cpu_count()} cores)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
