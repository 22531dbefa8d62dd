"""Gateway intents: which groups of events a shard asks Discord for."""

from __future__ import annotations

import enum

__all__ = ["PRIVILEGED_INTENTS", "Intents"]


class Intents(enum.IntFlag):
    """The documented gateway intents (``developers/events/gateway.mdx``, "List of Intents").

    A voice bot needs :attr:`GUILD_VOICE_STATES` (or no voice connection can ever complete) and
    usually :attr:`GUILDS`; :attr:`VOICE_DEFAULT` is exactly those two. ``GUILD_MEMBERS``,
    ``GUILD_PRESENCES`` and ``MESSAGE_CONTENT`` are privileged: requesting them without enabling
    them in the Developer Portal ends the shard with :class:`DisallowedIntents`.
    """

    NONE = 0
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MODERATION = 1 << 2
    GUILD_EXPRESSIONS = 1 << 3
    GUILD_INTEGRATIONS = 1 << 4
    GUILD_WEBHOOKS = 1 << 5
    GUILD_INVITES = 1 << 6
    GUILD_VOICE_STATES = 1 << 7
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15
    GUILD_SCHEDULED_EVENTS = 1 << 16
    AUTO_MODERATION_CONFIGURATION = 1 << 20
    AUTO_MODERATION_EXECUTION = 1 << 21
    GUILD_MESSAGE_POLLS = 1 << 24
    DIRECT_MESSAGE_POLLS = 1 << 25

    VOICE_DEFAULT = GUILDS | GUILD_VOICE_STATES


PRIVILEGED_INTENTS = Intents.GUILD_MEMBERS | Intents.GUILD_PRESENCES | Intents.MESSAGE_CONTENT
