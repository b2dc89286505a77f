"""What a batch (protocol §21) changes in what a replica sends: its answers, grouped.

Applying a batch needs no rule of its own: each of its requests takes the next position of
the stream and is applied exactly as it would be alone (so de-duplication, the log, a
substitute's replay, the join's cut and fencing see single requests, and each write gets its
own revision). What differs is the answers: the owner of each request of the batch would send
one message per request; it sends one per response topic instead, a `respostas` holding them
in stream order, where the first of them stood among its effects (so an answer never goes
later than it would have gone alone). A topic with one answer gets a plain `resposta`.
"""

from __future__ import annotations

from kvserver.effects import Effect, Publish
from kvwire.batch import Respostas
from kvwire.messages import Resposta


def grouped(effects: list[Effect], start: int, replica_id: int) -> None:
    """Group the answers among `effects[start:]` (what one batch produced), in place."""
    groups: dict[str, list[Resposta]] = {}
    for effect in effects[start:]:
        if type(effect) is Publish and type(effect.message) is Resposta:
            groups.setdefault(effect.topic, []).append(effect.message)
    if all(len(answers) == 1 for answers in groups.values()):
        return  # nothing to group: every topic has one answer, or none was sent
    kept: list[Effect] = []
    for effect in effects[start:]:
        if type(effect) is not Publish or type(effect.message) is not Resposta:
            kept.append(effect)
            continue
        answers = groups.pop(effect.topic, None)
        if answers is None:
            continue  # in its topic's group already
        if len(answers) == 1:
            kept.append(effect)
        else:
            batch = Respostas.model_construct(respostas=answers, idserv=replica_id)
            kept.append(Publish(effect.topic, batch))
    effects[start:] = kept
