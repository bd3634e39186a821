//! zcrx refill queue producer (in progress).
