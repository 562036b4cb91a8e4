package Gateway::Worker::Failure;

# What a handler dies with to fail its job with a code and message of its choosing.

use strict;
use warnings;

use Carp qw(croak);

use overload '""' => sub { "$_[0]{code}: $_[0]{message}" }, fallback => 1;

our $VERSION = '0.01';

sub new {
    my ($class, %args) = @_;
    my %failure = map { ($_ => delete $args{$_}) } qw(code message details);
    croak "unknown arguments: @{[ sort keys %args ]}" if %args;
    for my $field (qw(code message)) {
        croak "$field is required" unless defined $failure{$field} && !ref $failure{$field} && length $failure{$field};
    }
    delete $failure{details} unless defined $failure{details};
    return bless \%failure, $class;
}

# Shorthand: Gateway::Worker::Failure->throw(code => ..., message => ...).
sub throw {
    my ($class, %args) = @_;
    die $class->new(%args);
}

sub code    { $_[0]{code} }
sub message { $_[0]{message} }
sub details { $_[0]{details} }

# The body of the error answer: {"error": {"code", "message", "details"?}}.
sub body {
    my ($self) = @_;
    return { error => { %$self } };
}

1;

__END__

=head1 NAME

Gateway::Worker::Failure - fail a job from a Gateway::Worker handler

=head1 SYNOPSIS

    use Gateway::Worker::Failure;

    die Gateway::Worker::Failure->new(code => 'bad_input', message => 'a must be a number');
    # or
    Gateway::Worker::Failure->throw(code => 'refused', message => 'not today');

=head1 DESCRIPTION

A handler that dies with one of these fails its job with an C<error> answer whose body
is C<< {"error": {"code", "message", "details"?}} >>: the client sees exactly this code
and message. Any other die fails the job with code C<worker_error>.

=head1 METHODS

=head2 new(code => $code, message => $message, details => $anything)

C<code> and C<message> are required strings; C<details> is optional (any JSON value).

=head2 throw(%args)

C<new> and die.

=head2 code, message, details, body

Accessors; C<body> is the answer body. The object stringifies as C<"code: message">.

=cut
