package keys

// CloseModule closes k's module under it, as a lost token would.
func CloseModule(k *Key) error { return k.closeModule() }
