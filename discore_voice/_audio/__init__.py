"""Audio codecs and PCM handling; every native call goes through discore_voice._native."""
