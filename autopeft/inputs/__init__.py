"""Checks of what a user types: names that are not paths, option values, durations. Imports
nothing of autopeft but errors."""
