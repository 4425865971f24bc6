//! Cloud Run Admin API v2, IAP v1 and Resource Manager v3 clients. (not built yet)
