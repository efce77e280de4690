//! Frame rewrites for NAT, DR, TUN and FULLNAT. Being written.
