package identityv1

// SyncedHeader is the header meshid-ca sends on a WatchDestinations stream
// once its Pod, Service and EndpointSlice informers have synced, before any
// answer: a proxy that receives it knows its answers will be complete, and
// counts its destination cache fresh from then on, even before its app
// dials anything.
const SyncedHeader = "meshid-discovery-synced"
