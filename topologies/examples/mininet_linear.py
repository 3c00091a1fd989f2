"""A Mininet topology file, used unchanged by pipenem:

    pipenem topo probe topologies/examples/mininet_linear.py

Four hosts in a line of switches; the middle hop is a slow WAN link (80 Mbit); host links
run at 1 and 2.5 Gbit (Mininet's TCLink would leave 2.5 Gbit unshaped: > 1000 Mbit). A
``delay=``/``loss=`` option maps too, and then needs netem (see `pipenem doctor`).
"""

from mininet.topo import Topo


class PipelineLine(Topo):
    def build(self, n=4):
        switches = [self.addSwitch(f"s{i}") for i in range(1, n + 1)]
        for i in range(1, n + 1):
            host = self.addHost(f"h{i}")
            self.addLink(host, switches[i - 1], bw=2500 if i in (1, 2) else 1000)
        for i in range(n - 1):
            opts = {"bw": 80} if i == 1 else {"bw": 3000}
            self.addLink(switches[i], switches[i + 1], **opts)


topos = {"pipeline": PipelineLine}
