"""What a replica says about itself on the monitor topic, every heartbeat interval: enough
for the monitor to detect failures, for joiners to choose whom to wait for (§11, §17), and
for `kvclient status` to show positions, digests and who answers for whom."""

from __future__ import annotations

from kvserver.replica import Replica
from kvwire.messages import Heartbeat


def heartbeat(
    replica: Replica,
    now: float,
    forged: int | None = None,
    metrics_port: int | None = None,
    disk_full: bool = False,
) -> Heartbeat:
    """`forged`: control messages the adapter ignored for their signature (secured mode);
    `metrics_port`: where the adapter serves its metrics."""
    live = replica.state == "live"
    checkpoint = replica.checkpoint if live else None
    return Heartbeat(
        idserv=replica.id,
        incarnacao=replica.incarnation,
        modo="live" if live else "joining",
        # A replica that is not live still offers its position when its store is a prefix
        # of the stream: the highest such one resumes if nobody is live (§11).
        posicao=replica.position if replica.has_candidate else None,
        chaves=len(replica.store),
        resumo=replica.store.digest() if live else None,
        substituindo=replica.view.substituting() if live else None,
        marco=checkpoint[0] if checkpoint else None,
        resumomarco=checkpoint[1] if checkpoint else None,
        n=replica.n,
        enviadoem=now,
        invalidas=replica.replies.invalid_count,
        semresposta=replica.replies.unanswered_count,
        semassinatura=forged,
        # Sized once a byte quota or the metrics asked for it; else not at all.
        tamanho=replica.store.known_bytes if live else None,
        cotachaves=replica.quota.keys,
        cotabytes=replica.quota.bytes,
        metricas=metrics_port,
        disco="cheio" if disk_full else None,
    )
