"""The notifier: what each event says to a person, when it may be sent, and the channels."""
