"""Limits shared by every gateway process and replica (Redis), with local limits as the fallback."""
