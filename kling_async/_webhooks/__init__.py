"""Status-change callbacks: Standard Webhooks verification and the receiver that turns
deliveries into poll hints."""
