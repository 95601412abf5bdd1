"""The mappings shipped with Carryover, one <plugin>.yaml per integration."""
