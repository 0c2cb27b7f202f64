"""Tracking raw depth frames: inference runtimes, the hand localiser and detector, the centre refiner, the
streaming tracker, depth sources and streams."""
