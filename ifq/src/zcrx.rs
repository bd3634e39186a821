//! The zcrx backend (in progress).
