"""The local mesh (pilotfishctl): the ADS server and, later, Istio translation and runner."""
