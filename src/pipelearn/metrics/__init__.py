"""Timed events, busy and idle accounting, results files and Chrome traces."""
