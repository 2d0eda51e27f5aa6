"""Fleet state, appliance serve and the boot storm against real qemu-nbd."""
