"""Server-side strategies (one module each) and their pure state."""
