"""Test helper process: a multi-node Ray cluster on this machine (Ray's ray.cluster_utils.Cluster: one GCS, one
raylet per node), printed as RAY_ADDRESS=<host:port>; shut down when stdin closes or on SIGTERM.
Usage: python tests/ray_cluster.py NODES CPUS_PER_NODE   (run with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)."""
import signal
import sys

from ray.cluster_utils import Cluster


def main() -> None:
    nodes, cpus = int(sys.argv[1]), int(sys.argv[2])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False})
    signal.signal(signal.SIGTERM, lambda *_: (cluster.shutdown(), sys.exit(0)))
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
        print(f"RAY_ADDRESS={cluster.address}", flush=True)
        sys.stdin.read()  # until the test closes our stdin
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
