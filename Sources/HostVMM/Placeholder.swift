public enum HostVMMPlaceholder {}
