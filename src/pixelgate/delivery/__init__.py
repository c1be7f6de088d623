"""Delivery to the outside world: signed webhooks over HTTP, e-mail over SMTP.

Core decides what to send and when (:mod:`pixelgate.core.webhooks`,
:mod:`pixelgate.core.mailer`) and holds the signing contract; the senders here satisfy
its protocols and are wired by the composition root (:mod:`pixelgate.runtime`).
"""
