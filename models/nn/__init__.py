"""Composable network parts (backbones, streams, interaction, fusion, decoders, losses, strategies)."""
