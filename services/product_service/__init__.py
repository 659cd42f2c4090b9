"""The Product service: catalogue, stock reservations and the event consumer.

Stock model: ``stock`` counts units on hand (not yet sold) and ``reserved`` the
units held by outstanding reservations; a checkout can take ``stock - reserved``.
Reserving raises ``reserved``; cancel/expire lowers it (the stock comes back);
settle lowers both (the units are sold). An owner edits ``stock`` but never below
``reserved``, so editing never breaks an outstanding reservation.
"""
